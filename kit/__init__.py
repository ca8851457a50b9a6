"""verl-kit's support package: the plumbing behind algorithm.py, inference.py and training.py."""

import warnings

# verl probes optional engines (torchtitan, veomni, megatron, ...) at import and warns for each one missing.
warnings.filterwarnings("ignore", message=r".* engine is not available")
