"""SeaweedFS filer notification messages (``filer_pb``), built at runtime: no generated code, no protoc.

The SeaweedFS filer publishes every metadata change to Kafka as a serialized ``filer_pb.EventNotification``
with the message key set to the entry's full path (the *old* path for updates, renames and deletes;
``weed/filer/filer_notify.go``). This module declares the subset of ``weed/pb/filer.proto`` that the
intake needs, with the field numbers of the real file (checked against seaweedfs/seaweedfs). Fields left
out are kept as unknown fields by protobuf, so a full message parses and re-serializes losslessly.

    EventNotification { Entry old_entry = 1; Entry new_entry = 2; bool delete_chunks = 3;
                        string new_parent_path = 4; bool is_from_other_cluster = 5; repeated int32 signatures = 6; }
    Entry             { string name = 1; bool is_directory = 2; repeated FileChunk chunks = 3;
                        FuseAttributes attributes = 4; map<string, bytes> extended = 5; bytes content = 9; }
    FileChunk         { string file_id = 1; int64 offset = 2; uint64 size = 3; int64 modified_ts_ns = 4; string e_tag = 5; }
    FuseAttributes    { uint64 file_size = 1; int64 mtime = 2; uint32 file_mode = 3; int64 crtime = 6;
                        string mime = 7; bytes md5 = 14; }
    SubscribeMetadataResponse { string directory = 1; EventNotification event_notification = 2; int64 ts_ns = 3; }

The classes live in a private descriptor pool so they never clash with another copy of filer.proto.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_SCALARS = {"string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "bool": _F.TYPE_BOOL, "int32": _F.TYPE_INT32,
            "int64": _F.TYPE_INT64, "uint32": _F.TYPE_UINT32, "uint64": _F.TYPE_UINT64}

# message name -> [(field name, number, type, repeated)]; a type not in _SCALARS is a message in this package.
_MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    "FileChunk": [("file_id", 1, "string", False), ("offset", 2, "int64", False), ("size", 3, "uint64", False),
                  ("modified_ts_ns", 4, "int64", False), ("e_tag", 5, "string", False)],
    "FuseAttributes": [("file_size", 1, "uint64", False), ("mtime", 2, "int64", False),
                       ("file_mode", 3, "uint32", False), ("crtime", 6, "int64", False),
                       ("mime", 7, "string", False), ("md5", 14, "bytes", False)],
    "Entry": [("name", 1, "string", False), ("is_directory", 2, "bool", False),
              ("chunks", 3, "FileChunk", True), ("attributes", 4, "FuseAttributes", False),
              ("extended", 5, "Entry.ExtendedEntry", True), ("content", 9, "bytes", False)],
    "EventNotification": [("old_entry", 1, "Entry", False), ("new_entry", 2, "Entry", False),
                          ("delete_chunks", 3, "bool", False), ("new_parent_path", 4, "string", False),
                          ("is_from_other_cluster", 5, "bool", False), ("signatures", 6, "int32", True)],
    "SubscribeMetadataResponse": [("directory", 1, "string", False),
                                  ("event_notification", 2, "EventNotification", False),
                                  ("ts_ns", 3, "int64", False)],
}


def _add_fields(msg: descriptor_pb2.DescriptorProto, fields: list[tuple[str, int, str, bool]]) -> None:
    for name, number, type_, repeated in fields:
        field = msg.field.add(name=name, number=number, label=_REPEATED if repeated else _OPTIONAL)
        if type_ in _SCALARS:
            field.type = _SCALARS[type_]
        else:
            field.type, field.type_name = _F.TYPE_MESSAGE, f".filer_pb.{type_}"
        if repeated and type_ in ("int32", "int64", "uint32", "uint64", "bool"):
            field.options.packed = True  # proto3 default


def _build() -> dict[str, type]:
    file = descriptor_pb2.FileDescriptorProto(name="artroute/filer_pb_subset.proto", package="filer_pb",
                                              syntax="proto3")
    for name, fields in _MESSAGES.items():
        msg = file.message_type.add(name=name)
        _add_fields(msg, fields)
        if name == "Entry":  # map<string, bytes> extended = 5
            entry = msg.nested_type.add(name="ExtendedEntry")
            entry.options.map_entry = True
            _add_fields(entry, [("key", 1, "string", False), ("value", 2, "bytes", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"filer_pb.{name}"))
            for name in _MESSAGES}


_CLASSES = _build()
FileChunk = _CLASSES["FileChunk"]
FuseAttributes = _CLASSES["FuseAttributes"]
Entry = _CLASSES["Entry"]
EventNotification = _CLASSES["EventNotification"]
SubscribeMetadataResponse = _CLASSES["SubscribeMetadataResponse"]

__all__ = ["Entry", "EventNotification", "FileChunk", "FuseAttributes", "SubscribeMetadataResponse"]
