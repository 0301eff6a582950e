// Labels in English and Chinese, and numbers and times formatted for the language and the city's
// time zone (Intl). `t(key)` falls back to the key itself, so a field no dictionary names still
// shows its contract name.

const LABELS = {
  en: {
    title: "CitySense operations",
    signin: "Sign in",
    token: "API token",
    token_hint: "Kept in this tab only; closing the tab forgets it.",
    signout: "Sign out",
    wall: "Wall",
    desk: "Desk",
    live: "live",
    reconnecting: "reconnecting",
    offline: "offline",
    on_time: "on time",
    late: "late",
    silent: "silent",
    never: "never reported",
    alarm: "in alarm",
    districts: "Districts",
    alarms: "Open alarms",
    health: "Data quality and pipeline",
    device: "Device",
    critical: "critical",
    warning: "warning",
    info: "info",
    acknowledge: "Acknowledge",
    acknowledged: "acknowledged",
    cleared: "cleared",
    no_alarms: "No open alarms",
    dead_letters: "Dead letters, last hour",
    by_reason: "by reason",
    by_profile: "by profile",
    none: "none",
    devices_silent: "Devices silent",
    ingest_rate: "Readings per second",
    ingest_lag: "Lag (reading → screen)",
    stream_events: "Events received",
    registered: "registered",
    reporting: "reporting",
    latest: "Latest values",
    chart_24h: "Last 24 h",
    address: "Address",
    district: "District",
    profile: "Profile",
    status: "Status",
    last_seen: "Last seen",
    close: "Close",
    trend: "Today",
    open_data: "Open data: daily figures per district, days that are over",
    legend: "Legend",
    no_access: "Not shown for this token",
    sign_in_failed: "That token was not accepted",
    streetlight: "Streetlights",
    water_pipe: "Water pipes",
    power_meter: "Power meters",
    lamps_on: "Lamps on",
    total_power_w: "Lamp power",
    mean_pressure_kpa: "Mean pressure",
    min_pressure_kpa: "Minimum pressure",
    total_flow_m3h: "Total flow",
    total_active_power_kw: "Active power",
    max_active_power_kw: "Peak active power",
  },
  zh: {
    title: "城市运行监测",
    signin: "登录",
    token: "API 令牌",
    token_hint: "仅保存在本标签页，关闭即清除。",
    signout: "退出",
    wall: "大屏",
    desk: "桌面",
    live: "实时",
    reconnecting: "重新连接中",
    offline: "离线",
    on_time: "正常",
    late: "延迟",
    silent: "失联",
    never: "从未上报",
    alarm: "告警中",
    districts: "各区概况",
    alarms: "未关闭告警",
    health: "数据质量与管道",
    device: "设备",
    critical: "严重",
    warning: "警告",
    info: "提示",
    acknowledge: "确认",
    acknowledged: "已确认",
    cleared: "已解除",
    no_alarms: "暂无告警",
    dead_letters: "近一小时死信",
    by_reason: "按原因",
    by_profile: "按类型",
    none: "无",
    devices_silent: "失联设备",
    ingest_rate: "每秒读数",
    ingest_lag: "延迟（读数→屏幕）",
    stream_events: "已收事件",
    registered: "已登记",
    reporting: "上报中",
    latest: "最新数值",
    chart_24h: "近 24 小时",
    address: "地址",
    district: "区",
    profile: "类型",
    status: "状态",
    last_seen: "最近上报",
    close: "关闭",
    trend: "今日趋势",
    open_data: "开放数据：各区每日数据（仅已结束的日期）",
    legend: "图例",
    no_access: "此令牌无权查看",
    sign_in_failed: "令牌无效",
    streetlight: "路灯",
    water_pipe: "供水管网",
    power_meter: "电表",
    lamps_on: "亮灯数",
    total_power_w: "路灯功率",
    mean_pressure_kpa: "平均水压",
    min_pressure_kpa: "最低水压",
    total_flow_m3h: "总流量",
    total_active_power_kw: "有功功率",
    max_active_power_kw: "最大有功功率",
    pressure: "水压",
    flow: "流量",
    voltage: "电压",
    current: "电流",
    powerConsumption: "功耗",
    powerState: "开关状态",
    tiltAngle: "倾角",
    temperature: "温度",
    activePower: "有功功率",
    frequency: "频率",
    batteryLevel: "电量",
    leakDetected: "漏水",
    leak_flag: "漏水告警",
    low_pressure: "水压过低",
    low_battery: "电量低",
    pole_tilted: "灯杆倾斜",
    lamp_fault: "灯具故障",
    over_voltage: "过压",
    under_voltage: "欠压",
    cabinet_open: "箱门打开",
    frequency_deviation: "频率偏差",
    duplicate: "重复",
    invalid_json: "JSON 无效",
    out_of_range: "超出范围",
    wrong_type: "类型错误",
  },
};

const LOCALES = { en: "en-GB", zh: "zh-CN" };
let language = "en";
let zone = "UTC";

export function setLanguage(lang) {
  language = LABELS[lang] ? lang : "en";
  document.documentElement.lang = language === "zh" ? "zh-CN" : "en";
}

export const getLanguage = () => language;
export const setZone = (timeZone) => { zone = timeZone; };
export const getZone = () => zone;

export function t(key) {
  return LABELS[language][key] ?? LABELS.en[key] ?? key;
}

export function number(value, digits = 1) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return t(String(value));
  return new Intl.NumberFormat(LOCALES[language], { maximumFractionDigits: digits }).format(value);
}

export function time(iso, withDate = false) {
  if (!iso) return "–";
  const options = { timeZone: zone, hour: "2-digit", minute: "2-digit", second: "2-digit" };
  if (withDate) Object.assign(options, { month: "2-digit", day: "2-digit" });
  return new Intl.DateTimeFormat(LOCALES[language], options).format(new Date(iso));
}

// A chart's time axis: hours and minutes in the city's zone (epoch seconds in).
export function clock(seconds) {
  const options = { timeZone: zone, hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  return new Intl.DateTimeFormat(LOCALES[language], options).format(new Date(seconds * 1000));
}

export function age(ms) {
  const format = new Intl.RelativeTimeFormat(LOCALES[language], { numeric: "always" });
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return format.format(-s, "second");
  if (s < 5400) return format.format(-Math.round(s / 60), "minute");
  return format.format(-Math.round(s / 3600), "hour");
}

// Every element with data-t="key" shows t(key); called again when the language changes.
export function translate(root = document) {
  for (const el of root.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
}
