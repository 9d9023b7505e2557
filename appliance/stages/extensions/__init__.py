"""The extensions stage: `stage.STAGE` and the modules it uses."""
