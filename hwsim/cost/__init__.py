"""Cost models of the accelerator: cycles (exact for the RTL's tiles), energy from counted activity."""
