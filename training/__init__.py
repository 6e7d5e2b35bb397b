"""Training scripts of the bundled models (not part of the installed package).

Run them as modules from the repository root, e.g. ``python -m training.gpu_train --help``: the root is then on
the import path, so ``napari_unet`` and :mod:`training.splits` import as they are (see ``training/README.md``).
"""
