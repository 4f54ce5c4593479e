"""A stand-in training script for `worker`'s exec trainer: no dependencies, a few seconds a trial.

The worker runs it once per trial attempt with the trial in the environment:
  TRIAL_PARAMS           the params as a JSON object (also in the file TRIAL_PARAMS_FILE)
  TRIAL_MAX_RESOURCE     train up to this step
  TRIAL_CHECKPOINT_DIR   write checkpoints here
  TRIAL_RESUME_DIR/STEP  set when resuming an earlier attempt's checkpoint
  MLFLOW_TRACKING_URI, MLFLOW_RUN_ID  so `mlflow.log_metric` would log to this trial's run

Each evaluation is one JSON line on stdout: {"step", "value", "checkpoint"}. The checkpoint folder
is written completely (then renamed into place) before the line is printed; the worker uploads it
to the run's artifacts and tells the tracker, so a lost trial resumes from it on another worker.
"""

import json
import math
import os
import shutil
import time

params = json.loads(os.environ["TRIAL_PARAMS"])
max_step = int(os.environ.get("TRIAL_MAX_RESOURCE", "9"))
checkpoints = os.environ["TRIAL_CHECKPOINT_DIR"]

state = {"step": 0, "weights": 0.0}
if os.environ.get("TRIAL_RESUME_STEP"):
    with open(os.path.join(os.environ["TRIAL_RESUME_DIR"], "state.json")) as f:
        state = json.load(f)


def eval_loss(step):
    # Best near lr = 3e-3 and dropout = 0.1; more steps help, with diminishing returns.
    lr_term = (math.log10(params["lr"]) + 2.5) ** 2
    dropout_term = 4 * (params["dropout"] - 0.1) ** 2
    return lr_term + dropout_term + 1.0 / params["rank"] + 2.0 / step


for step in range(state["step"] + 1, max_step + 1):
    time.sleep(0.3)  # "training"
    state = {"step": step, "weights": state["weights"] + params["lr"]}
    folder = os.path.join(checkpoints, f"step-{step}")
    shutil.rmtree(folder + ".tmp", ignore_errors=True)
    os.makedirs(folder + ".tmp")
    with open(os.path.join(folder + ".tmp", "state.json"), "w") as f:
        json.dump(state, f)
    os.rename(folder + ".tmp", folder)
    print(json.dumps({"step": step, "value": eval_loss(step), "checkpoint": f"step-{step}"}), flush=True)
