from django.urls import path

from . import views

urlpatterns = [
    path("", views.calibration_index, name="calibration_index"),
    path("<slug:slug>/", views.calibration_page, name="calibration_page"),
    path("<slug:slug>/curve.csv", views.calibration_csv, name="calibration_csv"),
    path("<slug:slug>/apply/", views.apply_recommendation, name="calibration_apply"),
    path("<slug:slug>/stop/", views.automation_hold, name="automation_stop"),
    path("<slug:slug>/resume/", views.automation_resume, name="automation_resume"),
]
