"""Every command once, end to end, as the README's demo runs them (tiny budget)."""

import json
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def _run(command: list[str], env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_example_prep_train_sweep_predict_eval(tmp_path):
    env = {**os.environ, "NNDET_DATA": str(tmp_path / "data"),
           "NNDET_MODELS": str(tmp_path / "models")}  # fmt: skip
    _run(["nndet_example", "Task101", "--num-train", "10", "--num-test", "3"], env)
    _run(["nndet_prep", "Task101", "--target", "cpu", "-np", "1"], env)
    _run(["nndet_train", "Task101", "-f", "0", "--epochs", "1", "--iters-per-epoch", "2",
          "--num-workers", "0"], env)  # fmt: skip
    _run(["nndet_sweep", "Task101"], env)
    _run(["nndet_predict", "Task101", "--test", "--png"], env)
    printed = _run(["nndet_eval", "Task101", "--test"], env).stdout

    model_dir = tmp_path / "models" / "Task101_ToyShapes" / "retina_unet_2d"
    inference_plan = json.loads((model_dir / "inference_plan.json").read_text())
    assert "settings" in inference_plan and "metric_tuned" in inference_plan
    test_dir = model_dir / "test_predictions"
    predictions = sorted(test_dir.glob("*_boxes.json"))
    assert [p.name for p in predictions] == [f"test000{i}_boxes.json" for i in range(3)]
    first = json.loads(predictions[0].read_text())
    assert first["score_threshold"] == inference_plan["score_threshold"]
    assert (test_dir / "predictions.csv").is_file() and list((test_dir / "png").glob("*.png"))
    metrics = json.loads((test_dir / "metrics.json").read_text())
    assert metrics["num_cases"] == 3 and "mAP@0.1" in metrics
    assert "mAP@0.1" in printed
