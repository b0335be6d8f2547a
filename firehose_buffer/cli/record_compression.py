"""What a delivery stream must look like to carry compressed records (one zstd frame or gzip
member of whole JSON lines per record).

Firehose cannot decompress such records (its decompression is for CloudWatch Logs sources),
so the stream must hand them to S3 untouched: the object is then the records concatenated,
a multi-frame ``.jsonl.zst`` or multi-member ``.jsonl.gz`` file every standard reader reads.
Anything that looks into a record, adds to it or compresses it again breaks that.
"""

from __future__ import annotations

from typing import Any

#: codec -> the FileExtension its objects get, so readers pick the right decoder.
RECORD_COMPRESSIONS = {"zstd": ".jsonl.zst", "gzip": ".jsonl.gz"}

_PROCESSOR_PROBLEMS = {
    "AppendDelimiterToRecord": "the AppendDelimiterToRecord processor adds a newline after "
                               "each record, between compressed frames, which breaks every "
                               "reader",
    "Lambda": "a Lambda processor receives compressed bytes, not JSON",
    "RecordDeAggregation": "record deaggregation (dynamic partitioning) splits records on "
                           "newlines, inside compressed bytes",
    "MetadataExtraction": "metadata extraction (dynamic partitioning) parses records as JSON",
    "Decompression": "the Decompression processor is for CloudWatch Logs records",
    "CloudWatchLogProcessing": "the CloudWatchLogProcessing processor is for CloudWatch Logs "
                               "records",
}
_S3_DESCRIPTIONS = ("ExtendedS3DestinationDescription", "S3DestinationDescription")


def compression_problems(description: dict[str, Any], codec: str) -> list[str]:
    """Why ``description`` (DescribeDeliveryStream's) would break ``codec``-compressed records;
    empty when it would not."""
    destinations = description.get("Destinations") or [{}]
    destination = destinations[0]
    others = sorted(key.removesuffix("DestinationDescription") for key in destination
                    if key.endswith("DestinationDescription") and key not in _S3_DESCRIPTIONS)
    s3 = destination.get("ExtendedS3DestinationDescription") or \
        destination.get("S3DestinationDescription")
    if others or s3 is None:
        kind = others[0] if others else "not S3"
        return [f"the destination is {kind}: only an S3 destination stores compressed "
                "records as they are"]
    problems = []
    compression = s3.get("CompressionFormat") or "UNCOMPRESSED"
    if compression != "UNCOMPRESSED":
        problems.append(f"CompressionFormat is {compression}: Firehose would compress the "
                        "compressed records again (set UNCOMPRESSED)")
    processing = s3.get("ProcessingConfiguration") or {}
    processors = processing.get("Processors") or []
    # An omitted Enabled with processors listed is treated as on: warn rather than miss it.
    if processors and processing.get("Enabled", True):
        for processor in processors:
            kind = str(processor.get("Type"))
            problems.append(_PROCESSOR_PROBLEMS.get(
                kind, f"the {kind} processor sees compressed bytes"))
    if (s3.get("DynamicPartitioningConfiguration") or {}).get("Enabled"):
        problems.append("dynamic partitioning reads fields from each record, which are "
                        "compressed")
    conversion = s3.get("DataFormatConversionConfiguration")
    # Enabled defaults to true in Firehose's API when the configuration is given.
    if conversion and conversion.get("Enabled", True):
        problems.append("data format conversion (Parquet/ORC) parses records as JSON, which "
                        "are compressed")
    extension = s3.get("FileExtension")
    wanted = RECORD_COMPRESSIONS[codec]
    suffix = wanted.rsplit(".", 1)[-1]
    if "ExtendedS3DestinationDescription" in destination and \
            not str(extension or "").endswith("." + suffix):
        problems.append(f"FileExtension is {extension or 'not set'}: readers pick the decoder "
                        f"by extension (use {wanted})")
    return problems
