// `hsctl nest --depth 3` end to end with process isolation (no root needed).
import { nestScenario } from "./nest-scenario.js";

await nestScenario("process");
