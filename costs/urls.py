from django.urls import path

from . import views

urlpatterns = [
    path("", views.cost_overview, name="costs_overview"),
    path("latency/", views.latency, name="costs_latency"),
    path("reviewers/", views.reviewers, name="costs_reviewers"),
    path("csv/<slug:name>.csv", views.csv_download, name="costs_csv"),
    path("budgets/", views.budgets, name="costs_budgets"),
    path("budgets/<slug:slug>/", views.budget_edit, name="costs_budget_edit"),
    path("alerts/new/", views.alert_rule_edit, name="costs_alert_new"),
    path("alerts/<int:pk>/", views.alert_rule_edit, name="costs_alert_edit"),
    path("alerts/<int:pk>/delete/", views.alert_rule_delete, name="costs_alert_delete"),
]
