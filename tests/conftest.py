import os

# Progress bars would only add noise to test logs.
os.environ.setdefault("NNSA_PROGRESS", "0")
