"""Console widgets. They render what screens give them and never call the runtime."""
