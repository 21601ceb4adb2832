// Writes docs/state-chart.md from the runtime machine's own definition (test/docs.test.ts checks it is current).
import { writeFileSync } from "node:fs";
import { stateChartDoc } from "../src/machines/stateChartDoc.ts";

writeFileSync(new URL("../docs/state-chart.md", import.meta.url), stateChartDoc());
console.log("wrote docs/state-chart.md");
