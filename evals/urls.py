from django.urls import path

from . import versions, views

urlpatterns = [
    path("", views.eval_index, name="eval_index"),
    path("runs/<int:pk>/", views.eval_run, name="eval_run"),
    path("runs/<int:pk>/compare/<int:other>/", views.eval_compare, name="eval_compare"),
    path("from-review/<int:task_id>/", views.eval_case_from_review, name="eval_case_from_review"),
    path("<slug:slug>/", views.eval_workflow, name="eval_workflow"),
    path("<slug:slug>/run/", views.eval_run_create, name="eval_run_create"),
    path("<slug:slug>/import/", views.eval_import, name="eval_import"),
    path("<slug:slug>/datasets/<slug:name>/", views.eval_dataset, name="eval_dataset"),
    path("<slug:slug>/versions/", versions.version_list, name="eval_versions"),
    path("<slug:slug>/versions/edit/", versions.version_editor, name="eval_version_editor"),
    path("<slug:slug>/versions/check/", versions.version_check, name="eval_version_check"),
    path("<slug:slug>/versions/<int:number>/publish/", versions.version_publish, name="eval_version_publish"),
    path("<slug:slug>/versions/<int:number>/rollback/", versions.version_rollback, name="eval_version_rollback"),
    path("<slug:slug>/versions/<int:number>/dry-run/", versions.version_dry_run, name="eval_version_dry_run"),
    path("<slug:slug>/datasets/<slug:name>/judge/", views.eval_measure_judge, name="eval_measure_judge"),
    path("<slug:slug>/datasets/<slug:name>/cases.jsonl", views.eval_dataset_export, name="eval_dataset_export"),
]
