"""Django's ModelBackend, reading a session's user and their groups in one statement.

Every page checks a role (roles.has_role, a group name) and the review pages scope by group id
(roles.group_ids): that was a third statement on every request after the session and the user,
~1 ms of the Next button's ~6 in-process. Here the user's row comes with two arrays, the ids
and names of their groups, and roles.prime() fills the per-request cache that roles reads.
Authentication (the password check) is Django's, unchanged.
"""
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend as DjangoModelBackend
from django.contrib.postgres.aggregates import ArrayAgg
from django.db import connection
from django.db.models import Q

from . import roles


class ModelBackend(DjangoModelBackend):
    def get_user(self, user_id):
        if connection.vendor != "postgresql":
            return super().get_user(user_id)  # SQLite (make run): roles reads the groups itself
        has_group = Q(groups__isnull=False)
        User = get_user_model()
        try:
            user = (User._default_manager
                    .annotate(_group_id_list=ArrayAgg("groups__id", filter=has_group, default=[]),
                              _group_name_list=ArrayAgg("groups__name", filter=has_group, default=[]))
                    .get(pk=user_id))
        except User.DoesNotExist:
            return None
        roles.prime(user, user._group_id_list, user._group_name_list)
        return user if self.user_can_authenticate(user) else None
