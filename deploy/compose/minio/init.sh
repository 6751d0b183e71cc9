#!/bin/sh
# One-shot MinIO setup (run by the minio-init service with the minio/mc image). Idempotent: safe on
# every `docker compose up`.
#  1. the artworks bucket;
#  2. the worker's own least-privilege user (read + list on the bucket; never the root user);
#  3. the bucket notification rule: s3:ObjectCreated:* for image suffixes -> the Kafka target PRIMARY that
#     the minio service configures through MINIO_NOTIFY_KAFKA_*_PRIMARY (topic = ARTROUTE_INTAKE_TOPIC).
set -eu
: "${ARTROUTE_BUCKET:?}" "${ARTROUTE_S3_ACCESS_KEY:?}" "${ARTROUTE_S3_SECRET_KEY:?}"
mc alias set local "http://minio:9000" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null

mc mb --ignore-existing "local/${ARTROUTE_BUCKET}"

mc admin policy create local artroute-worker /init/worker-policy.json 2>/dev/null \
  || echo "policy artroute-worker exists"
mc admin user add local "$ARTROUTE_S3_ACCESS_KEY" "$ARTROUTE_S3_SECRET_KEY"
mc admin policy attach local artroute-worker --user "$ARTROUTE_S3_ACCESS_KEY" 2>/dev/null \
  || echo "policy already attached"

# One rule per suffix (S3 filters take one suffix each); suffix matching is case-sensitive.
for suffix in .jpg .jpeg .png .tif .tiff .webp .JPG .JPEG .PNG .TIF .TIFF .WEBP; do
  mc event add --ignore-existing "local/${ARTROUTE_BUCKET}" arn:minio:sqs::PRIMARY:kafka \
    --event put --suffix "$suffix"
done
mc event ls "local/${ARTROUTE_BUCKET}"
