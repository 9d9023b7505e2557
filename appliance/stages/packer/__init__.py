"""The packer stage: `stage.STAGE` and the modules it uses."""
