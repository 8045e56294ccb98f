from django.urls import path

from . import views

urlpatterns = [
    path("", views.calibration_index, name="calibration_index"),
    path("<slug:slug>/", views.calibration_page, name="calibration_page"),
    path("<slug:slug>/curve.csv", views.calibration_csv, name="calibration_csv"),
]
