"""The model package stays pure PyTorch (GUIDE lesson 6)."""

import subprocess
import sys

FORBIDDEN = ("dagster", "mlflow", "training", "pipelines", "evaluation")


def test_model_package_imports_nothing_from_infrastructure():
    script = (
        "import sys, model, model.checkpoint, model.hf_interop, model.tokenizer, model.cli;"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}];"
        "print(','.join(sorted(bad)))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
