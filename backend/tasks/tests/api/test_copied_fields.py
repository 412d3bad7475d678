"""The create serializer and the task types' inputs copy their declared fields shallowly
(``CopiedFieldsMixin``) where DRF deep-copies them: the fields must be the same, validate the
same way, and stay apart from each other's instances and from the class."""

from types import FunctionType, MethodType

import pytest
from django.db.models import QuerySet
from django.utils.functional import Promise
from rest_framework import serializers
from rest_framework.test import APIRequestFactory
from rest_framework.utils.formatting import lazy_format

from backend.common.serializers import CopiedFieldsMixin
from backend.tasks import types
from backend.tasks.api.serializers import TaskCreateSerializer
from backend.users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SERIALIZERS = [TaskCreateSerializer, *{kind.input_serializer for kind in types.all_types()}]

ODD_VALUES = [None, "", "x", 0, -1, 10**40, 1.5, True, [], {}, ["a"], [1, 2], {"a": 1}]


@pytest.fixture
def drf_copies(monkeypatch):
    """DRF's own field copies (``copy.deepcopy`` of the declared fields) while in use."""

    def use():
        monkeypatch.setattr(CopiedFieldsMixin, "get_fields", serializers.Serializer.get_fields)

    return use


def state(field) -> dict:
    """A bound field's attributes, compared by value: the objects that differ by identity
    alone (the parent serializer, a child field, a queryset, a lazy message) are replaced by
    what they stand for. The creation counter only orders the declared fields when their
    class is made."""
    return {
        name: plain(value, child=name == "child")
        for name, value in vars(field).items()
        if name != "_creation_counter"
    }


def plain(value, *, child=False):
    if isinstance(value, serializers.Field):
        return ("field", type(value).__name__, state(value) if child else None)
    if isinstance(value, QuerySet):
        return ("queryset", value.model, str(value.query))
    if isinstance(value, Promise | lazy_format):
        return str(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if hasattr(value, "__dict__") and not isinstance(value, type | FunctionType | MethodType):
        return (type(value).__name__, plain(vars(value)))  # a validator
    return value


def fields_state(cls, context):
    return {name: state(field) for name, field in cls(context=context).fields.items()}


def test_the_copied_fields_are_what_drf_copies(drf_copies):
    context = {"request": None, "owner": None, "task": {"name": "", "description": ""}}
    ours = {cls: fields_state(cls, context) for cls in SERIALIZERS}
    drf_copies()
    theirs = {cls: fields_state(cls, context) for cls in SERIALIZERS}
    assert ours == theirs
    assert all(ours[cls] for cls in SERIALIZERS if cls._declared_fields)


def inputs_of(kind):
    """The type's example, each field of it missing or set to odd values, and an unknown key."""
    example = dict(kind.example or {})
    yield example
    yield {**example, "unknown": 1}
    for key in example:
        yield {k: v for k, v in example.items() if k != key}
        for value in ODD_VALUES:
            yield {**example, key: value}


def outcomes(user):
    request = APIRequestFactory().post("/api/tasks/")
    request.user = user
    results = []
    for kind in types.all_types():
        for data in inputs_of(kind):
            inputs = kind.input_for(data, owner=user, task={"name": "n", "description": ""})
            valid = inputs.is_valid()
            results.append((kind.name, valid, inputs.validated_data if valid else inputs.errors))
            body = {"task_type": kind.name, "input_data": data}
            for extra in ({}, {"priority": "urgent"}, {"priority": "soon"}, {"name": "x" * 201}):
                create = TaskCreateSerializer(data={**body, **extra}, context={"request": request})
                valid = create.is_valid()
                results.append(
                    (kind.name, valid, create.validated_data if valid else create.errors)
                )
    return results


def test_validation_gives_what_drf_copies_give(drf_copies):
    user = UserFactory()
    ours = outcomes(user)
    drf_copies()
    assert ours == outcomes(user)
    assert {valid for _, valid, _ in ours} == {True, False}


def test_a_copy_changed_in_place_leaves_the_class_and_other_instances_alone():
    first = TaskCreateSerializer().fields
    first["name"].validators.append(lambda value: None)
    first["name"].error_messages["blank"] = "changed"
    first["description"].style["rows"] = 99
    first["priority"].choices = ["now"]
    second = TaskCreateSerializer().fields
    declared = TaskCreateSerializer._declared_fields
    for fields in (second, declared):
        assert len(fields["name"].validators) == len(declared["name"].validators) == 3
        assert fields["name"].error_messages["blank"] == "This field may not be blank."
        assert fields["description"].style["rows"] == 3
        assert "now" not in fields["priority"].choices
    assert first["name"].parent is not second["name"].parent
    assert declared["name"].parent is None  # the class's fields are never bound


def test_a_copied_list_field_has_its_own_child_bound_to_it():
    declared = types.get("sum").input_serializer._declared_fields["numbers"]
    first = types.get("sum").input_serializer().fields["numbers"]
    second = types.get("sum").input_serializer().fields["numbers"]
    assert first.child is not declared.child and first.child is not second.child
    assert first.child.parent is first and declared.child.parent is declared
    assert first.child.root is first.root  # so the child sees the serializer's context
    first.child.validators.append(lambda value: None)
    assert len(second.child.validators) == len(declared.child.validators)
