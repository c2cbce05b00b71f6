from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_STATE_UNSPECIFIED: _ClassVar[ActionState]
    ACTION_STATE_PENDING: _ClassVar[ActionState]
    ACTION_STATE_DELIVERED: _ClassVar[ActionState]
    ACTION_STATE_RUNNING: _ClassVar[ActionState]
    ACTION_STATE_COMPLETED: _ClassVar[ActionState]
    ACTION_STATE_FAILED: _ClassVar[ActionState]
    ACTION_STATE_EXPIRED: _ClassVar[ActionState]
    ACTION_STATE_CANCELLED: _ClassVar[ActionState]

class OnlineFilter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ONLINE_FILTER_ANY: _ClassVar[OnlineFilter]
    ONLINE_FILTER_ONLINE: _ClassVar[OnlineFilter]
    ONLINE_FILTER_OFFLINE: _ClassVar[OnlineFilter]

class ChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_KIND_UNSPECIFIED: _ClassVar[ChangeKind]
    CHANGE_KIND_PROPERTY: _ClassVar[ChangeKind]
    CHANGE_KIND_EVENT: _ClassVar[ChangeKind]
    CHANGE_KIND_TD_UPDATED: _ClassVar[ChangeKind]
    CHANGE_KIND_TD_DELETED: _ClassVar[ChangeKind]
    CHANGE_KIND_ACTION: _ClassVar[ChangeKind]
    CHANGE_KIND_PRESENCE: _ClassVar[ChangeKind]
    CHANGE_KIND_DESIRED: _ClassVar[ChangeKind]
ACTION_STATE_UNSPECIFIED: ActionState
ACTION_STATE_PENDING: ActionState
ACTION_STATE_DELIVERED: ActionState
ACTION_STATE_RUNNING: ActionState
ACTION_STATE_COMPLETED: ActionState
ACTION_STATE_FAILED: ActionState
ACTION_STATE_EXPIRED: ActionState
ACTION_STATE_CANCELLED: ActionState
ONLINE_FILTER_ANY: OnlineFilter
ONLINE_FILTER_ONLINE: OnlineFilter
ONLINE_FILTER_OFFLINE: OnlineFilter
CHANGE_KIND_UNSPECIFIED: ChangeKind
CHANGE_KIND_PROPERTY: ChangeKind
CHANGE_KIND_EVENT: ChangeKind
CHANGE_KIND_TD_UPDATED: ChangeKind
CHANGE_KIND_TD_DELETED: ChangeKind
CHANGE_KIND_ACTION: ChangeKind
CHANGE_KIND_PRESENCE: ChangeKind
CHANGE_KIND_DESIRED: ChangeKind

class WritePropertyRequest(_message.Message):
    __slots__ = ("twin_id", "name", "value_json", "expected_version")
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    twin_id: str
    name: str
    value_json: str
    expected_version: int
    def __init__(self, twin_id: _Optional[str] = ..., name: _Optional[str] = ..., value_json: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DesiredValue(_message.Message):
    __slots__ = ("twin_id", "name", "value_json", "version", "set_ms", "acknowledged_version")
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SET_MS_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_VERSION_FIELD_NUMBER: _ClassVar[int]
    twin_id: str
    name: str
    value_json: str
    version: int
    set_ms: int
    acknowledged_version: int
    def __init__(self, twin_id: _Optional[str] = ..., name: _Optional[str] = ..., value_json: _Optional[str] = ..., version: _Optional[int] = ..., set_ms: _Optional[int] = ..., acknowledged_version: _Optional[int] = ...) -> None: ...

class WritePropertyResponse(_message.Message):
    __slots__ = ("desired",)
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    desired: DesiredValue
    def __init__(self, desired: _Optional[_Union[DesiredValue, _Mapping]] = ...) -> None: ...

class ReadDesiredRequest(_message.Message):
    __slots__ = ("twin_id",)
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    twin_id: str
    def __init__(self, twin_id: _Optional[str] = ...) -> None: ...

class PropertyDelta(_message.Message):
    __slots__ = ("name", "desired_json", "desired_version", "reported_json", "reported_version", "reported_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESIRED_JSON_FIELD_NUMBER: _ClassVar[int]
    DESIRED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REPORTED_JSON_FIELD_NUMBER: _ClassVar[int]
    REPORTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REPORTED_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    desired_json: str
    desired_version: int
    reported_json: str
    reported_version: int
    reported_ms: int
    def __init__(self, name: _Optional[str] = ..., desired_json: _Optional[str] = ..., desired_version: _Optional[int] = ..., reported_json: _Optional[str] = ..., reported_version: _Optional[int] = ..., reported_ms: _Optional[int] = ...) -> None: ...

class ReadDesiredResponse(_message.Message):
    __slots__ = ("desired", "reported", "delta")
    class ReportedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    desired: _containers.RepeatedCompositeFieldContainer[DesiredValue]
    reported: _containers.MessageMap[str, Value]
    delta: _containers.RepeatedCompositeFieldContainer[PropertyDelta]
    def __init__(self, desired: _Optional[_Iterable[_Union[DesiredValue, _Mapping]]] = ..., reported: _Optional[_Mapping[str, Value]] = ..., delta: _Optional[_Iterable[_Union[PropertyDelta, _Mapping]]] = ...) -> None: ...

class WriteAck(_message.Message):
    __slots__ = ("twin_id", "name", "version")
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    twin_id: str
    name: str
    version: int
    def __init__(self, twin_id: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class Problem(_message.Message):
    __slots__ = ("status", "title", "detail", "type")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    status: int
    title: str
    detail: str
    type: str
    def __init__(self, status: _Optional[int] = ..., title: _Optional[str] = ..., detail: _Optional[str] = ..., type: _Optional[str] = ...) -> None: ...

class ActionTransition(_message.Message):
    __slots__ = ("state", "at_ms")
    STATE_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    state: ActionState
    at_ms: int
    def __init__(self, state: _Optional[_Union[ActionState, str]] = ..., at_ms: _Optional[int] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("action_id", "twin_id", "name", "input_json", "state", "requested_ms", "expires_ms", "output_json", "error", "reason", "transitions", "cancel_requested", "safe")
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    SAFE_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    twin_id: str
    name: str
    input_json: str
    state: ActionState
    requested_ms: int
    expires_ms: int
    output_json: str
    error: Problem
    reason: str
    transitions: _containers.RepeatedCompositeFieldContainer[ActionTransition]
    cancel_requested: bool
    safe: bool
    def __init__(self, action_id: _Optional[str] = ..., twin_id: _Optional[str] = ..., name: _Optional[str] = ..., input_json: _Optional[str] = ..., state: _Optional[_Union[ActionState, str]] = ..., requested_ms: _Optional[int] = ..., expires_ms: _Optional[int] = ..., output_json: _Optional[str] = ..., error: _Optional[_Union[Problem, _Mapping]] = ..., reason: _Optional[str] = ..., transitions: _Optional[_Iterable[_Union[ActionTransition, _Mapping]]] = ..., cancel_requested: _Optional[bool] = ..., safe: _Optional[bool] = ...) -> None: ...

class InvokeActionRequest(_message.Message):
    __slots__ = ("twin_id", "name", "input_json", "expiry_ms")
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_MS_FIELD_NUMBER: _ClassVar[int]
    twin_id: str
    name: str
    input_json: str
    expiry_ms: int
    def __init__(self, twin_id: _Optional[str] = ..., name: _Optional[str] = ..., input_json: _Optional[str] = ..., expiry_ms: _Optional[int] = ...) -> None: ...

class InvokeActionResponse(_message.Message):
    __slots__ = ("action",)
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: Action
    def __init__(self, action: _Optional[_Union[Action, _Mapping]] = ...) -> None: ...

class CancelActionRequest(_message.Message):
    __slots__ = ("action_id",)
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    def __init__(self, action_id: _Optional[str] = ...) -> None: ...

class CancelActionResponse(_message.Message):
    __slots__ = ("action",)
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: Action
    def __init__(self, action: _Optional[_Union[Action, _Mapping]] = ...) -> None: ...

class QueryActionRequest(_message.Message):
    __slots__ = ("action_id",)
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    def __init__(self, action_id: _Optional[str] = ...) -> None: ...

class QueryActionResponse(_message.Message):
    __slots__ = ("action",)
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: Action
    def __init__(self, action: _Optional[_Union[Action, _Mapping]] = ...) -> None: ...

class QueryActionsRequest(_message.Message):
    __slots__ = ("twin_id", "name", "states", "latest_per_name", "page_size", "page_token")
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    LATEST_PER_NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    twin_id: str
    name: str
    states: _containers.RepeatedScalarFieldContainer[ActionState]
    latest_per_name: bool
    page_size: int
    page_token: str
    def __init__(self, twin_id: _Optional[str] = ..., name: _Optional[str] = ..., states: _Optional[_Iterable[_Union[ActionState, str]]] = ..., latest_per_name: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class QueryActionsResponse(_message.Message):
    __slots__ = ("actions", "next_page_token")
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedCompositeFieldContainer[Action]
    next_page_token: str
    def __init__(self, actions: _Optional[_Iterable[_Union[Action, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("ack", "update", "write_ack")
    ACK_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    WRITE_ACK_FIELD_NUMBER: _ClassVar[int]
    ack: ActionAck
    update: ActionUpdate
    write_ack: WriteAck
    def __init__(self, ack: _Optional[_Union[ActionAck, _Mapping]] = ..., update: _Optional[_Union[ActionUpdate, _Mapping]] = ..., write_ack: _Optional[_Union[WriteAck, _Mapping]] = ...) -> None: ...

class ActionAck(_message.Message):
    __slots__ = ("action_id",)
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    def __init__(self, action_id: _Optional[str] = ...) -> None: ...

class ActionUpdate(_message.Message):
    __slots__ = ("action_id", "state", "output_json", "error")
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    state: ActionState
    output_json: str
    error: Problem
    def __init__(self, action_id: _Optional[str] = ..., state: _Optional[_Union[ActionState, str]] = ..., output_json: _Optional[str] = ..., error: _Optional[_Union[Problem, _Mapping]] = ...) -> None: ...

class AgentInstruction(_message.Message):
    __slots__ = ("action", "cancel", "write")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    WRITE_FIELD_NUMBER: _ClassVar[int]
    action: Action
    cancel: CancelInstruction
    write: DesiredValue
    def __init__(self, action: _Optional[_Union[Action, _Mapping]] = ..., cancel: _Optional[_Union[CancelInstruction, _Mapping]] = ..., write: _Optional[_Union[DesiredValue, _Mapping]] = ...) -> None: ...

class CancelInstruction(_message.Message):
    __slots__ = ("action_id",)
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    def __init__(self, action_id: _Optional[str] = ...) -> None: ...

class Presence(_message.Message):
    __slots__ = ("online", "last_seen_ms")
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    online: bool
    last_seen_ms: int
    def __init__(self, online: _Optional[bool] = ..., last_seen_ms: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("agent_id", "type", "thing_id_prefix", "page_size", "page_token", "online")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    THING_ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    type: str
    thing_id_prefix: str
    page_size: int
    page_token: str
    online: OnlineFilter
    def __init__(self, agent_id: _Optional[str] = ..., type: _Optional[str] = ..., thing_id_prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., online: _Optional[_Union[OnlineFilter, str]] = ...) -> None: ...

class ListThingsResponse(_message.Message):
    __slots__ = ("things", "next_page_token")
    THINGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    things: _containers.RepeatedCompositeFieldContainer[Thing]
    next_page_token: str
    def __init__(self, things: _Optional[_Iterable[_Union[Thing, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Thing(_message.Message):
    __slots__ = ("twin_id", "agent_id", "thing_id", "td_json", "updated_ms", "presence")
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    THING_ID_FIELD_NUMBER: _ClassVar[int]
    TD_JSON_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    twin_id: str
    agent_id: str
    thing_id: str
    td_json: str
    updated_ms: int
    presence: Presence
    def __init__(self, twin_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., thing_id: _Optional[str] = ..., td_json: _Optional[str] = ..., updated_ms: _Optional[int] = ..., presence: _Optional[_Union[Presence, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("kind", "twin_id", "agent_id", "thing_id", "name", "value", "td_json", "current_state", "action", "presence", "desired")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TWIN_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    THING_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TD_JSON_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STATE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    kind: ChangeKind
    twin_id: str
    agent_id: str
    thing_id: str
    name: str
    value: Value
    td_json: str
    current_state: bool
    action: Action
    presence: Presence
    desired: DesiredValue
    def __init__(self, kind: _Optional[_Union[ChangeKind, str]] = ..., twin_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., thing_id: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ..., td_json: _Optional[str] = ..., current_state: _Optional[bool] = ..., action: _Optional[_Union[Action, _Mapping]] = ..., presence: _Optional[_Union[Presence, _Mapping]] = ..., desired: _Optional[_Union[DesiredValue, _Mapping]] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("changes", "subscribed")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    subscribed: bool
    def __init__(self, changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., subscribed: _Optional[bool] = ...) -> None: ...
