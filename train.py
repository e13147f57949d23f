"""Trains an ANN for conversion: ``python train.py --config configs/quickstart.py --workdir DIR``.

The checkout's spelling of ``snnjax-train`` / ``python -m snnjax.train`` (see snnjax/train.py).
"""

from snnjax import train

if __name__ == "__main__":
    train.main()
