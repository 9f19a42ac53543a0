"""The AWS calls of batch-inference jobs: S3 and the ``bedrock`` control plane, errors typed.

Endpoints resolve like every boto3 client (``AWS_ENDPOINT_URL_BEDROCK``,
``AWS_ENDPOINT_URL_S3``, then ``AWS_ENDPOINT_URL``) unless given explicitly, so an
emulator is just another URL. Only imported when ``--mode job`` runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions as bex
from botocore.config import Config

from bedrock_mistral import errors

if TYPE_CHECKING:
    from mypy_boto3_bedrock import BedrockClient
    from mypy_boto3_s3 import S3Client

__all__ = ["JobAWS", "S3Location", "parse_s3_uri"]

logger = logging.getLogger(__name__)

_CODES: Mapping[str, type[errors.APIError]] = {
    "AccessDeniedException": errors.AccessDeniedError,
    "AccessDenied": errors.AccessDeniedError,
    "ValidationException": errors.ServiceValidationError,
    "ThrottlingException": errors.ThrottledError,
    "ServiceQuotaExceededException": errors.ServiceQuotaExceededError,
    "InternalServerException": errors.InternalServerError,
    "ServiceUnavailableException": errors.ServiceUnavailableError,
}


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ending in "/"

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key or self.prefix}"

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"


def parse_s3_uri(uri: str, *, flag: str) -> S3Location:
    """``s3://bucket/some/prefix`` -> bucket and ``some/prefix/`` (always a folder)."""
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise errors.ValidationError.out_of_range(flag, uri, "an S3 URI like s3://my-bucket/batch/")
    bucket, _, prefix = uri[5:].partition("/")
    prefix = prefix.strip("/")
    return S3Location(bucket=bucket, prefix=f"{prefix}/" if prefix else "")


# A batch job runs on Bedrock itself: the local backend is no way out here.
_CREDENTIALS_FIX = errors.Fix("run `aws configure` or set AWS_PROFILE")
_REGION_FIX = errors.Fix("pass {} or set AWS_REGION", errors.Arg("region"))


def _mapped(error: Exception, what: str) -> errors.BedrockMistralError:
    """One readable line for a failed AWS call, as our typed error."""
    if isinstance(error, bex.NoCredentialsError):
        return errors.CredentialsError(f"{what}: no AWS credentials found", fix=_CREDENTIALS_FIX)
    if isinstance(error, bex.NoRegionError):
        return errors.RegionError(f"{what}: no AWS region", fix=_REGION_FIX)
    if isinstance(error, bex.EndpointConnectionError | bex.ConnectionClosedError):
        return errors.APIConnectionError(f"{what}: cannot reach the endpoint ({error})")
    if isinstance(error, bex.ClientError):
        info = error.response.get("Error", {})
        code = str(info.get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = f"{what} failed: {code}: {info.get('Message', '')}".rstrip(": ")
        cls = _CODES.get(code, errors.APIError)
        return cls(message, code=code, status_code=status)
    return errors.APIError(f"{what} failed: {error}")


class JobAWS:
    """The handful of S3 and Bedrock control-plane calls a batch job needs."""

    def __init__(
        self,
        *,
        region: str | None,
        profile: str | None = None,
        bedrock_endpoint_url: str | None = None,
        s3_endpoint_url: str | None = None,
        session: boto3.session.Session | None = None,
    ) -> None:
        session = session or boto3.session.Session(profile_name=profile)
        region = region or os.environ.get("AWS_REGION") or session.region_name
        if not region:
            raise errors.RegionError("no AWS region for the batch job", fix=_REGION_FIX)
        config = Config(retries={"mode": "standard", "total_max_attempts": 5})
        self.region = region
        self.bedrock: BedrockClient = session.client(
            "bedrock", region_name=region, endpoint_url=bedrock_endpoint_url, config=config
        )
        self.s3: S3Client = session.client(
            "s3", region_name=region, endpoint_url=s3_endpoint_url, config=config
        )

    def upload(self, location: S3Location, key: str, data: bytes) -> None:
        try:
            self.s3.put_object(Bucket=location.bucket, Key=key, Body=data)
        except (bex.BotoCoreError, bex.ClientError) as err:
            raise _mapped(err, f"uploading s3://{location.bucket}/{key}") from err

    def create_job(self, request: dict[str, Any]) -> str:
        try:
            return self.bedrock.create_model_invocation_job(**request)["jobArn"]
        except (bex.BotoCoreError, bex.ClientError) as err:
            raise _mapped(err, "CreateModelInvocationJob") from err

    def find_job(self, job_name: str) -> str | None:
        """The ARN of the job called exactly ``job_name``, if one exists."""
        try:
            pages = self.bedrock.get_paginator("list_model_invocation_jobs").paginate(
                nameContains=job_name
            )
            for page in pages:
                for summary in page.get("invocationJobSummaries", []):
                    if summary.get("jobName") == job_name:
                        return summary["jobArn"]
        except (bex.BotoCoreError, bex.ClientError) as err:
            raise _mapped(err, "ListModelInvocationJobs") from err
        return None

    def get_job(self, job_arn: str) -> dict[str, Any]:
        try:
            return dict(self.bedrock.get_model_invocation_job(jobIdentifier=job_arn))
        except (bex.BotoCoreError, bex.ClientError) as err:
            raise _mapped(err, "GetModelInvocationJob") from err

    def output_keys(self, location: S3Location, job_id: str) -> list[str]:
        """Keys under ``<output prefix>/<job id>/``."""
        keys: list[str] = []
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=location.bucket, Prefix=location.key(f"{job_id}/")
            )
            for page in pages:
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except (bex.BotoCoreError, bex.ClientError) as err:
            raise _mapped(err, f"listing {location.uri(location.key(job_id + '/'))}") from err
        return sorted(keys)

    def read_lines(self, location: S3Location, key: str) -> Iterator[bytes]:
        try:
            body = self.s3.get_object(Bucket=location.bucket, Key=key)["Body"]
            yield from body.iter_lines()
        except (bex.BotoCoreError, bex.ClientError) as err:
            raise _mapped(err, f"downloading s3://{location.bucket}/{key}") from err

    def read(self, location: S3Location, key: str) -> bytes:
        try:
            return self.s3.get_object(Bucket=location.bucket, Key=key)["Body"].read()
        except (bex.BotoCoreError, bex.ClientError) as err:
            raise _mapped(err, f"downloading s3://{location.bucket}/{key}") from err
