"""``python -m napari_unet.cli``: the ``napari-unet`` command without its console script."""

import sys

from napari_unet.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
