"""Converts a trained ANN to an SNN: ``python convert.py --workdir DIR`` (reads the config from DIR).

The checkout's spelling of ``snnjax-convert`` / ``python -m snnjax.convert`` (see snnjax/convert.py).
"""

from snnjax import convert

if __name__ == "__main__":
    convert.main()
