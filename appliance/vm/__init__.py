"""appliance.vm."""
