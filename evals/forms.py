from django import forms

MAX_UPLOAD_BYTES = 10 * 1024 * 1024


class RunForm(forms.Form):
    version = forms.TypedChoiceField(coerce=int)
    dataset = forms.ChoiceField()

    def __init__(self, data=None, *, versions, datasets):
        super().__init__(data)
        self.fields["version"].choices = [(v.number, f"v{v.number}") for v in versions]
        self.fields["dataset"].choices = [(d.name, d.name) for d in datasets]


class ImportForm(forms.Form):
    dataset = forms.SlugField(max_length=80, initial="default", help_text="Created when it does not exist.")
    file = forms.FileField(help_text="JSON Lines: one case per line, {\"id\", \"input\", \"expect\"}.")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"The file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
        try:
            return upload.read().decode("utf-8")
        except UnicodeDecodeError:
            raise forms.ValidationError("The file is not UTF-8 text.") from None
