from twisted.application.service import ServiceMaker

hoopgate = ServiceMaker(
    "hoopgate", "hoopgate.tap", "hoopgate identity-aware access gateway", "hoopgate"
)
