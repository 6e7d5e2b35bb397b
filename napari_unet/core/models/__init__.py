"""The network, the model bundle on disk and the version registry, bioimage.io packages."""
