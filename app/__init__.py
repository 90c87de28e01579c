"""pagemill's control plane: settings, state, storage, queue, API, submitter and CLI.

Nothing here imports `workers` or an ML library: the API starts fast and its image is small.
"""
