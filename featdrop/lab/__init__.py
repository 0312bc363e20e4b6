"""Many runs: grid planning (``plan``), grid launching over worker processes, GPUs and machines (``launch``),
how many runs share one device well (``concurrency``), and tables of finished runs (``tables``)."""
