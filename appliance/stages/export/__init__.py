"""The export stage: `stage.STAGE` and the modules it uses."""
