from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_KIND_UNSPECIFIED: _ClassVar[ChangeKind]
    CHANGE_KIND_PROPERTY: _ClassVar[ChangeKind]
    CHANGE_KIND_EVENT: _ClassVar[ChangeKind]
    CHANGE_KIND_TD_UPDATED: _ClassVar[ChangeKind]
    CHANGE_KIND_TD_DELETED: _ClassVar[ChangeKind]
CHANGE_KIND_UNSPECIFIED: ChangeKind
CHANGE_KIND_PROPERTY: ChangeKind
CHANGE_KIND_EVENT: ChangeKind
CHANGE_KIND_TD_UPDATED: ChangeKind
CHANGE_KIND_TD_DELETED: ChangeKind

class UpdateThingRequest(_message.Message):
    __slots__ = ("td_json",)
    TD_JSON_FIELD_NUMBER: _ClassVar[int]
    td_json: str
    def __init__(self, td_json: _Optional[str] = ...) -> None: ...

class UpdateThingResponse(_message.Message):
    __slots__ = ("twin_id", "created")
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    twin_id: str
    created: bool
    def __init__(self, twin_id: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class GetThingRequest(_message.Message):
    __slots__ = ("twin_id", "original")
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_FIELD_NUMBER: _ClassVar[int]
    twin_id: str
    original: bool
    def __init__(self, twin_id: _Optional[str] = ..., original: _Optional[bool] = ...) -> None: ...

class GetThingResponse(_message.Message):
    __slots__ = ("thing",)
    THING_FIELD_NUMBER: _ClassVar[int]
    thing: Thing
    def __init__(self, thing: _Optional[_Union[Thing, _Mapping]] = ...) -> None: ...

class DeleteThingRequest(_message.Message):
    __slots__ = ("twin_id",)
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    twin_id: str
    def __init__(self, twin_id: _Optional[str] = ...) -> None: ...

class DeleteThingResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListThingsRequest(_message.Message):
    __slots__ = ("agent_id", "type", "thing_id_prefix", "page_size", "page_token")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    THING_ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    type: str
    thing_id_prefix: str
    page_size: int
    page_token: str
    def __init__(self, agent_id: _Optional[str] = ..., type: _Optional[str] = ..., thing_id_prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListThingsResponse(_message.Message):
    __slots__ = ("things", "next_page_token")
    THINGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    things: _containers.RepeatedCompositeFieldContainer[Thing]
    next_page_token: str
    def __init__(self, things: _Optional[_Iterable[_Union[Thing, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Thing(_message.Message):
    __slots__ = ("twin_id", "agent_id", "thing_id", "td_json", "updated_ms")
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    THING_ID_FIELD_NUMBER: _ClassVar[int]
    TD_JSON_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    twin_id: str
    agent_id: str
    thing_id: str
    td_json: str
    updated_ms: int
    def __init__(self, twin_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., thing_id: _Optional[str] = ..., td_json: _Optional[str] = ..., updated_ms: _Optional[int] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("json", "timestamp_ms")
    JSON_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    json: str
    timestamp_ms: int
    def __init__(self, json: _Optional[str] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class PublishPropertiesRequest(_message.Message):
    __slots__ = ("twin_id", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    twin_id: str
    values: _containers.MessageMap[str, Value]
    def __init__(self, twin_id: _Optional[str] = ..., values: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class PublishPropertiesResponse(_message.Message):
    __slots__ = ("ignored_older",)
    IGNORED_OLDER_FIELD_NUMBER: _ClassVar[int]
    ignored_older: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ignored_older: _Optional[_Iterable[str]] = ...) -> None: ...

class PublishEventRequest(_message.Message):
    __slots__ = ("twin_id", "name", "value")
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    twin_id: str
    name: str
    value: Value
    def __init__(self, twin_id: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class PublishEventResponse(_message.Message):
    __slots__ = ("ignored_older",)
    IGNORED_OLDER_FIELD_NUMBER: _ClassVar[int]
    ignored_older: bool
    def __init__(self, ignored_older: _Optional[bool] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("twin_id", "names")
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    twin_id: str
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, twin_id: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class ReadResponse(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.MessageMap[str, Value]
    def __init__(self, values: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("twin_ids", "agent_id", "names", "kinds", "include_current_state")
    TWIN_IDS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CURRENT_STATE_FIELD_NUMBER: _ClassVar[int]
    twin_ids: _containers.RepeatedScalarFieldContainer[str]
    agent_id: str
    names: _containers.RepeatedScalarFieldContainer[str]
    kinds: _containers.RepeatedScalarFieldContainer[ChangeKind]
    include_current_state: bool
    def __init__(self, twin_ids: _Optional[_Iterable[str]] = ..., agent_id: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ..., kinds: _Optional[_Iterable[_Union[ChangeKind, str]]] = ..., include_current_state: _Optional[bool] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("kind", "twin_id", "agent_id", "thing_id", "name", "value", "td_json", "current_state")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    THING_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TD_JSON_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STATE_FIELD_NUMBER: _ClassVar[int]
    kind: ChangeKind
    twin_id: str
    agent_id: str
    thing_id: str
    name: str
    value: Value
    td_json: str
    current_state: bool
    def __init__(self, kind: _Optional[_Union[ChangeKind, str]] = ..., twin_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., thing_id: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ..., td_json: _Optional[str] = ..., current_state: _Optional[bool] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("changes", "subscribed")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    subscribed: bool
    def __init__(self, changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., subscribed: _Optional[bool] = ...) -> None: ...
