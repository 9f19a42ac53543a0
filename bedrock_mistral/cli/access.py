"""What the AWS account can use: credentials, region, and model access (Bedrock control plane).

``ListFoundationModels(byProvider=mistral)`` says which models the region offers; for
each offered model ``GetFoundationModelAvailability`` says whether this account may
invoke it. Either call may be refused (IAM, old regions, an emulator without a control
plane): every failure becomes a note, never an error, because the table is still useful.
The control-plane endpoint can be overridden with ``AWS_ENDPOINT_URL_BEDROCK``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bedrock_mistral.cli.config import Settings

if TYPE_CHECKING:
    import boto3

__all__ = ["AccessReport", "AwsSetup", "aws_setup", "check_access"]


@dataclass
class AwsSetup:
    """Credentials and region as boto3 would find them for these settings."""

    session: boto3.session.Session | None
    credential_source: (
        str | None
    )  # "env", "shared-credentials-file", "sso", ...; None: no credentials
    region: str | None
    problem: str | None = None  # why the session could not be built at all


def aws_setup(settings: Settings) -> AwsSetup:
    import boto3
    import botocore.exceptions as bex

    try:
        session = boto3.session.Session(profile_name=settings.profile)
    except bex.ProfileNotFound as err:
        return AwsSetup(
            None, None, settings.region, problem=f"{err}; check AWS_PROFILE / --profile"
        )
    try:
        credentials = session.get_credentials()
    except bex.BotoCoreError as err:  # a broken profile, an expired SSO token...
        return AwsSetup(session, None, settings.region or session.region_name, problem=str(err))
    source = getattr(credentials, "method", "unknown") if credentials is not None else None
    return AwsSetup(session, source, settings.region or session.region_name)


@dataclass
class AccessReport:
    """``status`` maps Bedrock model ids to an access word; ``note`` says what was not checked."""

    status: dict[str, str] = field(default_factory=dict)
    lifecycle: dict[str, str] = field(default_factory=dict)
    note: str | None = None
    checked: bool = False  # the control plane answered


def _client(setup: AwsSetup) -> Any:
    from botocore.config import Config

    assert setup.session is not None  # checked by the caller
    # Short timeouts: this is a listing for a table, not worth a long wait.
    config = Config(connect_timeout=3, read_timeout=10, retries={"total_max_attempts": 2})
    return setup.session.client("bedrock", region_name=setup.region, config=config)


def _availability(client: Any, model_id: str) -> str:
    import botocore.exceptions as bex

    try:
        found = client.get_foundation_model_availability(modelId=model_id)
    except (bex.ClientError, bex.BotoCoreError):
        return "offered"  # listed in the region; this account's access unknown
    agreement = (found.get("agreementAvailability") or {}).get("status", "AVAILABLE")
    if found.get("authorizationStatus") == "NOT_AUTHORIZED":
        return "denied by IAM"
    if found.get("entitlementAvailability") == "NOT_AVAILABLE" or agreement != "AVAILABLE":
        return "needs access" if agreement != "PENDING" else "access pending"
    return "enabled"


def check_access(settings: Settings) -> AccessReport:
    """Model access in the account and region, as far as the control plane tells."""
    import botocore.exceptions as bex

    setup = aws_setup(settings)
    if setup.problem or setup.session is None:
        return AccessReport(note=str(setup.problem))
    if setup.credential_source is None:
        return AccessReport(note="no AWS credentials")
    if not setup.region:
        return AccessReport(note="no AWS region")
    client = _client(setup)
    try:
        summaries = client.list_foundation_models(byProvider="mistral").get("modelSummaries", [])
    except (bex.ClientError, bex.BotoCoreError) as err:
        return AccessReport(note=f"ListFoundationModels failed in {setup.region}: {_short(err)}")
    report = AccessReport(checked=True)
    ids = [s["modelId"] for s in summaries if s.get("modelId")]
    for summary in summaries:
        report.lifecycle[summary.get("modelId", "")] = (summary.get("modelLifecycle") or {}).get(
            "status", ""
        )
    with ThreadPoolExecutor(max_workers=8) as pool:
        for model_id, status in zip(
            ids, pool.map(lambda m: _availability(client, m), ids), strict=True
        ):
            report.status[model_id] = status
    if not ids:
        report.note = f"the control plane in {setup.region} lists no Mistral models"
    return report


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 160 else text[:157] + "..."
