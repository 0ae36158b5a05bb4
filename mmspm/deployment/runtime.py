"""Running an exported ONNX file in onnxruntime, on its CPU provider."""
import numpy as np
from torch import Tensor


def run_onnxruntime(path: str, x: Tensor) -> np.ndarray:
    """The first output of the ONNX file at ``path`` for input ``x``.

    Run on onnxruntime's CPU provider.

    Args:
        path (str): The ONNX file.
        x (Tensor): The input.

    Returns:
        np.ndarray: The first output.
    """
    return onnxruntime_outputs(path, x)[0]


def onnxruntime_outputs(path: str, x: Tensor) -> list[np.ndarray]:
    """All outputs of the ONNX file at ``path`` for input ``x``.

    Run on onnxruntime's CPU provider.

    Args:
        path (str): The ONNX file.
        x (Tensor): The input.

    Returns:
        list[np.ndarray]: The outputs, in the graph's order.
    """
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    return session.run(None, {'input': x.numpy()})
