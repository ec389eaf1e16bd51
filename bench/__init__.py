"""fastft's benchmark harness: `python bench/throughput.py` (training systems) and `python bench/kernels.py`."""
