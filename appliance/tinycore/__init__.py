"""appliance.tinycore."""
