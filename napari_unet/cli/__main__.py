"""``python -m napari_unet.cli``: the ``napari-unet`` command without its console script."""

import sys

from napari_unet.cli import console_main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(console_main())
