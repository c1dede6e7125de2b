"""The servers' ceiling: a pyfunc with the project's signature that answers zeros.

Saved as models-from-code (no pickled class), so it loads in any process. Served by the
same server as the real model, it measures what the server itself costs per request:
parsing, MLflow's schema enforcement against ``model.packaging.SIGNATURE``, the
response; the real model's figures are compared with it.
"""

import mlflow
import numpy as np
import pandas as pd


class Zeros(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"median_house_value": np.zeros(len(model_input))})


mlflow.models.set_model(Zeros())
