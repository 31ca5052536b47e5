"""Tiled losses against plain torch and pytorch-metric-learning; the code lives in :mod:`negkit.bench` so that
``negkit bench`` runs the same thing. Usage: ``python benchmarks/bench_tiled.py [options of negkit.bench]``."""

from negkit.bench import main

if __name__ == "__main__":
    main()
