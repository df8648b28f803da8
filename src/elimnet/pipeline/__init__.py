"""The work of each DVC stage, as library functions; `stages/*.py` are thin CLI wrappers."""
