"""Two small nodes: an image inverter and a text repeater that reports progress."""
import comfy.utils
import folder_paths


class InvertBrightness:
    """Blend an image with its negative."""

    CATEGORY = "examples"
    DESCRIPTION = "Blend an image with its negative (1.0 = fully inverted)."
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "amount": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})}}

    def run(self, image, amount):
        return (image * (1 - amount) + (1 - image) * amount,)


class RepeatText:
    """Repeat a text, reporting one progress step per copy; shows the result in the editor."""

    CATEGORY = "examples"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hello", "multiline": True}),
                             "times": ("INT", {"default": 2, "min": 1, "max": 100})}}

    def run(self, text, times):
        bar = comfy.utils.ProgressBar(times)
        parts = []
        for _ in range(times):
            parts.append(text)
            bar.update(1)
        joined = " ".join(parts)
        return {"ui": {"text": [joined], "output_dir": [folder_paths.get_output_directory()]}, "result": (joined,)}


NODE_CLASS_MAPPINGS = {"KilnExampleInvert": InvertBrightness, "KilnExampleRepeatText": RepeatText}
NODE_DISPLAY_NAME_MAPPINGS = {"KilnExampleInvert": "Invert Brightness (example)",
                              "KilnExampleRepeatText": "Repeat Text (example)"}
