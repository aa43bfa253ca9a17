"""MLflow's scoring protocol: `POST /invocations` and `GET /ping`, so that a client written
for `mlflow models serve` works against this API unchanged (`readmission.api.mlflow_scoring`
says what is read and answered)."""

from fastapi import APIRouter

from readmission.api import mlflow_scoring
from readmission.api.deps import CurrentModel, ServicesDep
from readmission.api.mlflow_scoring import Predictions, ScoringError, ScoringRoute
from readmission.api.protocol_route import OTHER_CLIENT_ERRORS
from readmission.api.schemas import NoModel, Ready

TAGS = ["MLflow scoring protocol"]
REFUSALS = {
    400: {"model": ScoringError, "description": "Invalid input: the message and each problem"},
    415: {"model": ScoringError, "description": "A content type other than JSON or CSV"},
    503: {
        "model": ScoringError,
        "description": "No model loaded yet, or the scoring queue is full (Retry-After)",
    },
    **OTHER_CLIENT_ERRORS,
}
#: The CSV body, documented beside the JSON one that FastAPI derives from the model.
CSV_BODY = {
    "requestBody": {
        "content": {
            mlflow_scoring.CONTENT_CSV: {
                "schema": {
                    "type": "string",
                    "description": "A frame as pandas' to_csv writes it: a header of column "
                    "names, then one line per encounter",
                }
            }
        }
    }
}


def invocations_router(max_batch: int) -> APIRouter:
    """/invocations, typed with the app's batch limit (a setting), and /ping."""
    router = APIRouter()
    body_model = mlflow_scoring.invocation_request(max_batch)
    scoring = APIRouter(tags=TAGS, route_class=ScoringRoute)

    @scoring.post(
        "/invocations",
        response_model=Predictions,
        responses=REFUSALS,
        openapi_extra=CSV_BODY,
        summary=f"Score up to {max_batch:,} encounters as MLflow's scoring server does",
    )
    async def invocations(body: body_model, services: ServicesDep) -> dict:
        """The four JSON formats of `mlflow models serve` (dataframe_split,
        dataframe_records, instances, inputs) or CSV; each row an encounter checked as
        /predict checks it. Answers `{"predictions": [...]}`: class labels, or with
        `"params": {"predict_fn": "predict_proba"}` probabilities ("<30", ">30", "NO")."""
        answers, loaded = await services.score(mlflow_scoring.encounters(body))
        classes = [str(c) for c in loaded.model.classes_]
        predicted = mlflow_scoring.predictions(body, answers, classes)
        return {"predictions": predicted, "model": loaded.ref}

    @router.get(
        "/ping",
        tags=TAGS,
        response_model=Ready,
        summary="A model is loaded (503 otherwise): MLflow's health check",
        responses={503: {"model": NoModel, "description": "No model loaded"}},
    )
    async def ping(loaded: CurrentModel) -> dict:
        return {"status": "ready", "model": loaded.ref}

    router.include_router(scoring)
    return router
