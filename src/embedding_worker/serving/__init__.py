"""How jobs arrive: the RunPod handler, the worker builder, the local endpoint."""
