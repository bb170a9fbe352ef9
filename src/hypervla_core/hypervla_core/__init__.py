"""HyperVLA in pure PyTorch: a hypernetwork generates a small task policy per instruction."""
from .config import ModelConfig, TrainConfig
from .task_policy import PolicyFormatError, TaskPolicy

__version__ = "0.1.0"
__all__ = ["ModelConfig", "TrainConfig", "TaskPolicy", "PolicyFormatError", "__version__"]
