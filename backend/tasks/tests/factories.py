import factory

from backend.tasks.models import Task, TaskStatus
from backend.users.tests.factories import UserFactory


class TaskFactory(factory.django.DjangoModelFactory):
    """A task row as the services would leave it; no message is sent."""

    class Meta:
        model = Task

    owner = factory.SubFactory(UserFactory)
    assignee = factory.SelfAttribute("owner")
    task_type = "sum"
    name = factory.Sequence(lambda n: f"task {n}")
    input_data = factory.LazyFunction(lambda: {"numbers": [1, 2, 3]})
    status = TaskStatus.PENDING
    max_attempts = 3
