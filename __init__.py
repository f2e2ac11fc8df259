"""c3dhash: distributed training and retrieval for deep video hashing.

The repository's top-level folders (cluster/, distributed/, eval/, loaders/, model/) are installed as
sub-packages of this one (setup.py maps the checkout's root to `c3dhash`), so nothing installs a top-level
`distributed`, `eval` or `model` that could clash with dask or with a user's own `model.py`.
"""
