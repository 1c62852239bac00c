"""Export for deployment: the fine-tuned CLIP's encoders as ONNX, checked against PyTorch.

``python -m workbench.export onnx <run folder or model> [--output DIR]``; the library is
:mod:`workbench.export.onnx` (``export_onnx``, ``check_parity``). Needs the ``export`` extra
(``pip install .[export]``: onnx, onnxruntime, onnxscript).
"""

from workbench.export.onnx import (
    IMAGE_FILE,
    MANIFEST_FILE,
    TEXT_FILE,
    ExportError,
    ParityCheck,
    ParityInputs,
    ParityError,
    ParityReport,
    check_parity,
    default_export_dir,
    export_onnx,
    onnx_image_embeddings,
    onnx_text_embeddings,
    parity_inputs,
    run_settings,
    write_onnx_encoders,
)

__all__ = [
    "IMAGE_FILE",
    "MANIFEST_FILE",
    "TEXT_FILE",
    "ExportError",
    "ParityCheck",
    "ParityInputs",
    "ParityError",
    "ParityReport",
    "check_parity",
    "default_export_dir",
    "export_onnx",
    "onnx_image_embeddings",
    "onnx_text_embeddings",
    "parity_inputs",
    "run_settings",
    "write_onnx_encoders",
]
