"""streams.worker.s3http signs requests exactly as the minio SDK does (path and virtual-host style, regions,
queries, awkward keys), and addresses AWS endpoints virtual-host style as the SDK does."""
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from minio.credentials import Credentials
from minio.signer import sign_v4_s3

from minio.helpers import BaseURL

from streams.worker.s3http import EMPTY_SHA256, S3Http, SigV4, s3_quote

WHEN = datetime(2026, 12, 1, 14, 5, 28, tzinfo=UTC)


@pytest.mark.parametrize("endpoint, bucket, key, query, region, secure", [
    ("127.0.0.1:9000", "artworks", "scans/plain.jpg", None, "us-east-1", False),
    ("127.0.0.1:9000", "artworks", "with space+plus=eq&amp~tilde/ünï/深い.jpg", {"versionId": "3/L4kq+x=="}, "us-east-1", False),
    ("minio.example.org", "artworks", "a%2Fb!'()*.jpg", None, "eu-central-1", True),
    ("s3.eu-west-1.amazonaws.com", "artworks", "k/x.jpg", {"versionId": "abc"}, "eu-west-1", True),
    ("s3.amazonaws.com", "my.dotted.bucket", "k/x.jpg", None, "us-east-1", True),
])
def test_signature_matches_the_sdk(endpoint, bucket, key, query, region, secure):
    http = S3Http(endpoint, "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", secure=secure, region=region)
    host, path = http._target(bucket, key, query, region)
    canonical_query = "&".join(f"{s3_quote(k, '')}={s3_quote(v, '')}" for k, v in sorted((query or {}).items()))
    ours = SigV4(http.signer.access_key, http.signer.secret_key, http.signer.payload_hash).headers(
        "GET", host, path, canonical_query, region, now=WHEN)
    ours = dict(line.split(": ", 1) for line in ours.strip().split("\r\n"))
    url = urlsplit(f"{'https' if secure else 'http'}://{host}{path}" + (f"?{canonical_query}" if query else ""))
    sdk = sign_v4_s3(method="GET", url=url, region=region,
                     headers={"Host": host, "x-amz-content-sha256": http.signer.payload_hash,
                              "x-amz-date": WHEN.strftime("%Y%m%dT%H%M%SZ")},
                     credentials=Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                     content_sha256=http.signer.payload_hash, date=WHEN)
    assert ours["Authorization"] == sdk["Authorization"]
    sdk_url = BaseURL(("https://" if secure else "http://") + endpoint, region).build(
        method="GET", region=region, bucket_name=bucket, object_name=key, query_params=query)
    assert (sdk_url.netloc, sdk_url.path) == (host, path)  # the same address, path or virtual-host style
    assert http.signer.payload_hash == ("UNSIGNED-PAYLOAD" if secure else EMPTY_SHA256)


def test_aws_endpoints_are_addressed_as_the_sdk_addresses_them():
    aws = S3Http("s3.eu-west-1.amazonaws.com", "a", "b", secure=True, region="eu-west-1")
    assert aws._target("artworks", "k/x y.jpg", None, "eu-west-1") == ("artworks.s3.eu-west-1.amazonaws.com",
                                                                       "/k/x%20y.jpg")
    assert aws._target("my.bucket", "k.jpg", None, "eu-west-1") == ("s3.eu-west-1.amazonaws.com", "/my.bucket/k.jpg")
    assert aws.port == 443
    local = S3Http("127.0.0.1:8333", "a", "b")
    assert local._target("artworks", "k.jpg", None, "us-east-1") == ("127.0.0.1:8333", "/artworks/k.jpg")
    assert local.port == 8333 and not local.virtual_host
