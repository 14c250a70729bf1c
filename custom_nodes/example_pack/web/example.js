// Kiln example pack: a frontend extension served from WEB_DIRECTORY at /extensions/example_pack/.
import { app } from "../../scripts/app.js";

app.registerExtension({
  name: "kiln.example_pack",
  nodeCreated(node) {
    if (node.comfyClass === "KilnExampleRepeatText") node.color = "#335";
  },
});
