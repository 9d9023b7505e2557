"""The kernel stage: `stage.STAGE` and the modules it uses."""
