"""The Open Inference Protocol (KServe V2) under /v2: health, server and model metadata,
model readiness and inference, so that KServe, Seldon (MLServer) and Triton clients work
against this API (`readmission.api.open_inference` says what is read and answered).

The version in a path is optional, as in the protocol: without it the version holding the
production alias answers; with it, only that version's number is accepted.
"""

from typing import Annotated

from fastapi import APIRouter, Path, Request

from readmission.api import open_inference as oip
from readmission.api.deps import CurrentModel, ServicesDep
from readmission.api.protocol_route import OTHER_CLIENT_ERRORS
from readmission.names import MODEL_NAME

TAGS = ["Open Inference Protocol (KServe V2)"]
NOT_SERVED = {404: {"model": oip.InferenceError, "description": "Model or version not served"}}
NO_MODEL = {503: {"model": oip.InferenceError, "description": "No model loaded yet"}}
INFERENCE_REFUSALS = {
    400: {
        "model": oip.InferenceError,
        "description": "Invalid input: the message and each problem (field and reason)",
    },
    **NOT_SERVED,
    503: {
        "model": oip.InferenceError,
        "description": "No model loaded yet, or the scoring queue is full (Retry-After)",
    },
}
ModelName = Annotated[
    str, Path(description="The model's name", json_schema_extra={"enum": [MODEL_NAME]})
]
ModelVersion = Annotated[str, Path(description="The version in service (see versions)")]


def inference_router(max_batch: int) -> APIRouter:
    """The /v2 routes; inference takes at most `max_batch` rows (a setting)."""
    router = APIRouter(
        prefix="/v2", tags=TAGS, route_class=oip.InferenceRoute, responses=OTHER_CLIENT_ERRORS
    )

    @router.get("", response_model=oip.ServerMetadata, summary="Server metadata")
    async def server_metadata(request: Request) -> dict:
        return {"name": request.app.title, "version": request.app.version, "extensions": []}

    @router.get("/health/live", response_model=oip.ServerLive, summary="The server is live")
    async def server_live() -> dict:
        return {"live": True}

    @router.get(
        "/health/ready",
        response_model=oip.ServerReady,
        responses=NO_MODEL,
        summary="The model is loaded (503 otherwise)",
    )
    async def server_ready(_loaded: CurrentModel) -> dict:
        return {"ready": True}

    async def metadata(name: ModelName, services: ServicesDep) -> dict:
        """The model's inputs (one per column, `parameters.required` marking the required
        ones) and outputs (`predict`, `predict_proba`)."""
        oip.check_model(name)
        loaded = services.store.current
        return {
            "name": MODEL_NAME,
            "versions": [loaded.version] if loaded is not None else [],
            "platform": oip.PLATFORM,
            "inputs": oip.input_metadata(),
            "outputs": oip.output_metadata(),
        }

    async def version_metadata(
        name: ModelName, version: ModelVersion, loaded: CurrentModel, services: ServicesDep
    ) -> dict:
        oip.check_model(name)
        oip.check_version(version, loaded.version)
        return await metadata(name, services)

    async def model_ready(name: ModelName, _loaded: CurrentModel) -> dict:
        oip.check_model(name)
        return {"name": MODEL_NAME, "ready": True}

    async def version_ready(name: ModelName, version: ModelVersion, loaded: CurrentModel) -> dict:
        oip.check_model(name)
        oip.check_version(version, loaded.version)
        return {"name": MODEL_NAME, "ready": True}

    async def infer(name: ModelName, body: oip.InferenceRequest, services: ServicesDep) -> dict:
        """Score the encounters of the request: one input tensor per column (see the
        model's metadata), at most API_MAX_BATCH rows; outputs `predict` (the class) and
        `predict_proba` (the probabilities of "<30", ">30", "NO")."""
        return await _infer(name, None, body, services)

    async def version_infer(
        name: ModelName, version: ModelVersion, body: oip.InferenceRequest, services: ServicesDep
    ) -> dict:
        return await _infer(name, version, body, services)

    async def _infer(
        name: str, version: str | None, body: oip.InferenceRequest, services: ServicesDep
    ) -> dict:
        oip.check_model(name)
        loaded = services.store.current
        if version is not None and loaded is not None:
            oip.check_version(version, loaded.version)
        wanted = oip.requested_outputs(body)
        answers, loaded = await services.score(oip.encounters(body, max_batch))
        classes = [str(c) for c in loaded.model.classes_]
        return {
            "model_name": loaded.name,
            "model_version": loaded.version,
            "id": oip.request_id(body),
            "outputs": oip.output_tensors(answers, classes, wanted),
        }

    model, version = "/models/{name}", "/models/{name}/versions/{version}"
    for path, endpoint in ((model, metadata), (version, version_metadata)):
        router.get(
            path,
            response_model=oip.ModelMetadata,
            response_model_exclude_none=True,  # the protocol's optional fields: absent
            responses={**NOT_SERVED, **NO_MODEL},
            summary="Model metadata: versions, inputs, outputs",
        )(endpoint)
    for path, endpoint in ((model, model_ready), (version, version_ready)):
        router.get(
            f"{path}/ready",
            response_model=oip.ModelReady,
            responses={**NOT_SERVED, **NO_MODEL},
            summary="The model is ready (503 otherwise)",
        )(endpoint)
    for path, endpoint in ((model, infer), (version, version_infer)):
        router.post(
            f"{path}/infer",
            response_model=oip.InferenceResponse,
            response_model_exclude_none=True,
            responses=INFERENCE_REFUSALS,
            summary=f"Score up to {max_batch:,} encounters, one input tensor per column",
        )(endpoint)
    return router
