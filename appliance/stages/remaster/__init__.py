"""The remaster stage: `stage.STAGE` and the modules it uses."""
