"""The CPU path of the engine, one room: what makes a forward pass fast and bounded on a CPU.

- `kernels.py`: linear layers on oneDNN with packed weights;
- `real_tokens.py`: encoders that compute on real tokens only (no padding);
- `long_attention.py`: masked attention in blocks, memory linear in length;
- `int8.py` and `int8_gate.py`: `DTYPES=int8` on a CPU, and the quality gate it must pass;
- `memory.py`: kernel caches bounded, freed memory handed back;
- `quota.py`: the CPUs the container may use, and the thread pools sized to them.

Nothing here is imported on a GPU's serving path; importing the package imports nothing.
"""
