"""The application: the ``portaconv`` command (CLI), the training loop, built-in models, datasets,
checkpoints, the op check and the benchmark harness; built on the library, never imported by it.
"""
