"""The serving benchmark's baseline: the same booster behind a bare FastAPI + uvicorn process.

``python -m streamfit.scripts.bare_server MODEL.ubj --port P --features a,b,c`` answers
``POST /predict`` with the same request and response shape as the streamfit Router.
"""


import argparse

import numpy as np
import uvicorn
import xgboost as xgb
from fastapi import FastAPI

from streamfit.serve.api import Prediction, row_model


def make_app(model_path: str, features: list[str]) -> FastAPI:
    """A FastAPI app with one /predict route around one booster."""
    booster = xgb.Booster()
    booster.load_model(model_path)
    booster.set_param({"nthread": 1})  # one request, one thread: as in the Router's slots
    Row = row_model(features)
    app = FastAPI()

    from pydantic import BaseModel

    class Body(BaseModel):
        features: Row  # type: ignore[valid-type]

    @app.post("/predict")
    async def predict(body: Body) -> Prediction:
        x = np.array([[getattr(body.features, n) for n in features]], dtype=float)
        p = float(booster.inplace_predict(x)[0])
        return Prediction(prediction=int(p >= 0.5), probability=p, model_version=1, slot="bare")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


def main() -> None:
    """Command line entry."""
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--features", required=True)
    args = ap.parse_args()
    uvicorn.run(make_app(args.model, args.features.split(",")), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
